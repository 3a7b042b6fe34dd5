"""Supply chain: the SBOM of an image and the in-toto attestations that carry it."""
