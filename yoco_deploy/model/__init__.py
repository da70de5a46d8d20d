"""The model: layer math, the elastic super-BERT, extraction of a dense sub-BERT, loading."""
