"""Local stand-ins for outside services that speak the real protocols."""
