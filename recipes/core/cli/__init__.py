"""The commands' shell: absl flags shared by the recipes, --data from flags, and the
process set-up with one-line errors.
"""
