"""The registry's domain: model files, base models, access and the rules between them."""
