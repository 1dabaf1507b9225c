# The two commands of the README: `make demo` (set up, build, fetch SOTU, train the quickstart,
# replacing an earlier demo run)
# and `make test` (set up, build, run the default test suite).
BUILD ?= build
JOBS ?= $(shell nproc)
CTEST_LABELS ?= unit
CTEST_EXCLUDE ?= slow|gpu

.PHONY: setup configure build demo test test-all bench clean

setup:
	scripts/setup

configure: setup
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	./$(BUILD)/fedsplit run recipes/quickstart.ini --run.overwrite=true

test: build
	cd $(BUILD) && ctest --output-on-failure -L '$(CTEST_LABELS)' -LE '$(CTEST_EXCLUDE)' -j 1

test-all: build
	cd $(BUILD) && ctest --output-on-failure -LE gpu -j 1

bench: build
	bench/run

clean:
	rm -rf $(BUILD)
