"""`make bench`: scenarios measured in one run against one throwaway PostgreSQL."""
