"""Stage II: targets and budgets, search, ship, the super-BERT's evaluators."""
