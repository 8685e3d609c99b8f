"""Local mode: a whole meshed application on one machine from one file."""
