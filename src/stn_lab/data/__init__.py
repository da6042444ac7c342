"""Data: raw-file readers (``sources``), batched distortions, and the LightningDataModules."""
