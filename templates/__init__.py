"""MindSpeed-MM 2.3.0 config templates for CogVideoX, shipped inside the wheel."""
