"""The service layer: validation and storage of iovox objects, independent of HTTP."""
