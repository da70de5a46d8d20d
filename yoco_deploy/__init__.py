"""yoco-deploy."""
