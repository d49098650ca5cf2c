"""Out of gradus: the Hugging Face Hub export and its dataset card."""
