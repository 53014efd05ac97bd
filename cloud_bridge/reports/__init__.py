"""Reports: campaign figures and exports."""
