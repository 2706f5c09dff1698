"""Getting accepted calls dialled: claiming due calls, pacing, and placing them on legs."""
