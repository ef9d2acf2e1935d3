"""The top layer: the main job (pipeline), the toolkit's sections, reports, figures, export, interop and the CLI."""
