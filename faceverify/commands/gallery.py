"""``faceverify gallery fit-pca IMAGES --model M --components N --out pca.npz``: offline gallery
tools. A command above the gallery library (which never imports it), so it may import the model."""

import sys

from ..fit_pca import fit_pca_main

# gallery subcommand -> (main(argv), one-line help)
COMMANDS = {"fit-pca": (fit_pca_main, "fit the optional PCA projection of the index (faceverify serve --pca)")}


def usage() -> str:
    lines = ["usage: faceverify gallery <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines + ["", "faceverify gallery <command> --help shows a command's options."])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"faceverify gallery: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return int(COMMANDS[argv[0]][0](argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
