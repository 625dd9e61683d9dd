#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_quant", "placeholder", -1, NULL};

PyMODINIT_FUNC PyInit__quant(void) { return PyModule_Create(&moduledef); }
