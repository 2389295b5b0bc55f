"""``python -m rbr_fast.bench``: the command line lives in ``rbr_fast.cli.bench``."""
import sys

from rbr_fast.cli.bench import PROG, main
from rbr_fast.cli.common import run_command

if __name__ == "__main__":
    sys.exit(run_command(PROG, main))
