from compress.cpu_numerics import pin

pin()  # before torch loads: CPU results independent of the machine's instruction set (compress/cpu_numerics.py)

from compress.cli import main  # noqa: E402

raise SystemExit(main(prog="python -m compress"))
