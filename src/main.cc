#include "cli/app.h"

int main(int argc, char** argv) { return ringvm::run_cli(argc, argv); }
