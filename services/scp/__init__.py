"""The Modality Worklist C-FIND SCP service: its own association acceptor on pynetdicom's codecs."""
