"""The PySide6 desktop viewer: all Qt code lives here."""
