"""``python -m faceverify.gallery fit-pca IMAGES --model M --components N --out pca.npz``"""

import sys

from ..fit_pca import fit_pca_main

if len(sys.argv) < 2 or sys.argv[1] != "fit-pca":
    print("usage: python -m faceverify.gallery fit-pca IMAGES --model M --components N --out pca.npz", file=sys.stderr)
    sys.exit(2)
sys.exit(fit_pca_main(sys.argv[2:]))
