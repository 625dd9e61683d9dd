#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_core", "placeholder", -1, NULL};

PyMODINIT_FUNC PyInit__core(void) { return PyModule_Create(&moduledef); }
