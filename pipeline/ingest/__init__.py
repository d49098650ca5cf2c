"""Problems in: sources normalised to one schema, file readers, benchmark sets."""
