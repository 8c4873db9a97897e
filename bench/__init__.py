"""`make bench`: our Modality Worklist SCP and REST API measured beside DCMTK wlmscpfs and Orthanc."""
