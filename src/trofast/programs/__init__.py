"""Programs: the versioned program document and its storage."""
