"""Emotion analytics on videos, webcams and photos: faces found (``detect``), followed
across frames (``tracks``), classified in batches (``analyzer``), summarised and drawn
(``outputs``); ``job`` is ``fer-lab analyze``."""
