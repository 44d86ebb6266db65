// Issue 13 regression tests (see the issue text in the commit log).
#include <gtest/gtest.h>
