"""``python -m yoco_deploy.cli`` (and ``accelerate launch -m yoco_deploy.cli``)."""

import sys

from yoco_deploy.cli.main import main

sys.exit(main())  # its exit code: 1 for a mistake, 143 for SIGTERM
