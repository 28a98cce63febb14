"""What each variant needs from the hub and the cloud shares, and fetching it."""
