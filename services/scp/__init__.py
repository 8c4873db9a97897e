"""The Modality Worklist C-FIND SCP service (pynetdicom)."""
