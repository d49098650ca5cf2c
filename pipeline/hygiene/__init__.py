"""Pool hygiene: text forms, MinHash, near-duplicate removal and benchmark contamination."""
