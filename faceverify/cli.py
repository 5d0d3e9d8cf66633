"""The ``faceverify`` command: one entry point, one subcommand per module (``SUBCOMMANDS``)."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with main(argv), one-line help). Every command lives in the package, so an
# installed faceverify needs no top-level modules (python -m train/eval/serve/data_prep from a
# checkout run the same mains).
SUBCOMMANDS = {
    "prep": ("faceverify.commands.prep", "align a folder-per-identity dataset into a packed training set"),
    "train": ("faceverify.commands.train", "train an identity model from a YAML recipe (torchrun for many processes)"),
    "eval": ("faceverify.commands.eval", "evaluate a model: LFW 10-fold protocol or MegaFace-style identification"),
    "export": ("faceverify.commands.export", "export a model to ONNX or TorchScript"),
    "export-mtcnn": ("faceverify.commands.export_mtcnn", "export MTCNN's P/R/O-nets to ONNX (the torch-free detector, models/mtcnn)"),
    "serve": ("faceverify.commands.serve", "run the REST service (verify, embed, gallery enroll/identify)"),
    "gallery": ("faceverify.commands.gallery", "offline gallery tools (fit-pca: the index's PCA projection)"),
    "verify": ("faceverify.commands.verify", "verify two photos from the command line; prints one JSON object"),
}

# Passive OpenMP waiting (faceverify/threads.py): spinning workers cost 4-6x on a shared CPU, for
# per-request latency (serve, verify: also 1 torch thread) and batch throughput (prep, eval, gallery
# fit-pca: all cores) alike (docs/service.md, Threads). train keeps OpenMP's defaults: it owns the machine.
PASSIVE_WAIT_COMMANDS = ("serve", "verify", "prep", "eval", "gallery")


def usage() -> str:
    lines = ["usage: faceverify <command> [options]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "faceverify <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"faceverify {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"faceverify: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if name in PASSIVE_WAIT_COMMANDS:  # before the module imports torch: OpenMP reads it once, at load
        from .threads import apply_wait_policy

        apply_wait_policy()
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
