"""CN-RadGraph: annotations, the extractor's features, training and inference."""
