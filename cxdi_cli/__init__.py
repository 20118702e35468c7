"""cxdi: coherent X-ray diffraction imaging from the command line (library part).

The library does the numerics and the file formats; it never prints, never exits and never imports
the command-line packages. See DESIGN.md for the layout.
"""
__version__ = "0.1.0"
