"""imdb-sentiment: fine-tune transformer encoders for review sentiment, tracked in MLflow."""

__version__ = "0.1.0"
