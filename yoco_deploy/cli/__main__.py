"""``python -m yoco_deploy.cli`` (and ``accelerate launch -m yoco_deploy.cli``)."""

from yoco_deploy.cli.main import main

main()
