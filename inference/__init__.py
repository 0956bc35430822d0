"""Image loading, preprocessing, models, prediction, Grad-CAM and export. Imports no Qt."""
