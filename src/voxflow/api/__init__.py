"""The iovox wire API: a thin HTTP edge over the service layer."""
