"""``faceverify gallery fit-pca IMAGES --model M --components N --out pca.npz``: offline gallery
tools. A command above the gallery library (which never imports it), so it may import the model."""

import argparse
import json
import sys

from . import run


def fit_pca_main(argv: list[str] | None = None) -> int:
    """``faceverify gallery fit-pca IMAGES --model M --components 128 --out pca.npz``:
    embed photos of *training* identities (not the gallery's people) with the served model and fit
    the projection ``faceverify serve --pca`` uses."""
    p = argparse.ArgumentParser(prog="faceverify gallery fit-pca", description=fit_pca_main.__doc__)
    p.add_argument("images", help="a folder of photos, searched recursively (e.g. a training set)")
    p.add_argument("--model", default=None, help="the model the service serves (default: models/default)")
    p.add_argument("--components", type=int, default=128)
    p.add_argument("--limit", type=int, default=5000, help="at most this many photos")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of the model's runtime while embedding (default: one per core)")
    args = p.parse_args(argv)
    return run("gallery fit-pca", lambda: fit_pca(args))


def fit_pca(args: argparse.Namespace) -> None:
    from ..fit_pca import fit_pca as fit

    pca, faces, skipped = fit(args.images, args.model, args.components, args.limit, threads=args.threads)
    pca.save(args.out)
    print(json.dumps({"out": args.out, "faces": faces, "skipped": skipped, "in_dim": pca.in_dim,
                      "out_dim": pca.out_dim, "explained_variance": round(pca.explained_variance or 0.0, 4)}))


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
