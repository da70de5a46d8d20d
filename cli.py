"""Run the yoco-deploy CLI from a checkout: ``python cli.py --help``."""

from yoco_deploy.cli import main

if __name__ == "__main__":
    main()
