"""Pictures and exports of what the other stages make. `render.load_picture` reads a file into a
`picture.Picture` (built by `patterns`, `reconstructions` or `curves`), `figure` draws it as PNG and
`terminal` as text; `export` writes the numbers as TIFF (ImageJ, napari) or, through `vtk`, as a
VTK image (ParaView).

May import the base and every stage (it draws what they make)."""
