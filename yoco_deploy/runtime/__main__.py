"""``python runner.pyz BUNDLE_DIR`` (or ``python -m yoco_deploy.runtime BUNDLE_DIR``)."""

import sys

from yoco_deploy.runtime.runner import main

sys.exit(main())
