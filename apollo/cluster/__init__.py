"""Cluster management: drive lifecycle, scrub, repair and the tuning that paces them."""
