"""``python -m rbr_fast.ppo`` (under ``torchrun`` for several processes): the command line lives in
``rbr_fast.cli.ppo``."""
import sys

from rbr_fast.cli.ppo import main

if __name__ == "__main__":
    sys.exit(main())
