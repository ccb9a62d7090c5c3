"""Compare BN γ distributions of checkpoints. Copy and edit: change the defaults in
yoloslim/commands/vis_bn.py, or run e.g. `python vis_bn_weight.py --weights base.pt sparse.pt --out gamma.png`."""

from yoloslim.cli import script_main

if __name__ == "__main__":
    script_main("vis-bn")
