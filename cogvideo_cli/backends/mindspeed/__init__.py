"""MindSpeed-MM: locate the checkout, its entry scripts and arguments."""
