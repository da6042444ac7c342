"""Plain ``nn.Module`` building blocks: transform families, localisers, classifiers and the STN."""
