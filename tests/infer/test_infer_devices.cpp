// labels: unit
// The inference devices.ini (infer/infer_devices.h): a full file and the defaults, the shipped
// recipes/devices-edge.ini, and every refusal as a one-line ConfigError naming the file, line,
// section and key.
#include <gtest/gtest.h>

#include "core/util/error.h"
#include "infer/infer_devices.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_one_line_error;

constexpr const char* kFull =
    "# three devices\n"
    "[device phone]\n"
    "speed = 0.25\n"
    "memory_mb = 3072\n"
    "first = true\n"
    "\n"
    "[device  laptop]\n"  // two spaces: the same as one
    "speed = 1\n"
    "[device edge-1]\n"
    "speed = 4\n"
    "memory_mb = 16384\n"
    "[link]\n"
    "mbps = 100\n"
    "latency_ms = 5\n"
    "[link edge-1 laptop]\n"
    "mbps = 1000\n";

TEST(InferDevices, ParsesDevicesLinksAndTheFirstDevice) {
  const InferDevicesFile f = parse_infer_devices(kFull, "edge.ini");
  ASSERT_EQ(f.devices.size(), 3u);
  EXPECT_EQ(f.devices[0].name, "phone");
  EXPECT_DOUBLE_EQ(f.devices[0].speed, 0.25);
  EXPECT_EQ(f.devices[0].memory_bytes, int64_t{3072} << 20);
  EXPECT_EQ(f.devices[1].name, "laptop");
  EXPECT_EQ(f.devices[1].memory_bytes, 0);  // unlimited by default
  EXPECT_EQ(f.devices[2].name, "edge-1");
  EXPECT_DOUBLE_EQ(f.devices[2].speed, 4);
  EXPECT_EQ(f.first_device, 0);
  EXPECT_DOUBLE_EQ(f.default_link.mbps, 100);
  EXPECT_DOUBLE_EQ(f.default_link.latency_ms, 5);
  ASSERT_EQ(f.links.size(), 1u);
  EXPECT_EQ(f.links[0].a, 2);
  EXPECT_EQ(f.links[0].b, 1);
  EXPECT_DOUBLE_EQ(f.links[0].link.mbps, 1000);
  EXPECT_DOUBLE_EQ(f.links[0].link.latency_ms, 5);  // left out: [link]'s

  InferProblem p;
  apply_devices(f, p);
  EXPECT_EQ(p.devices.size(), 3u);
  EXPECT_EQ(p.first_device, 0);
  EXPECT_EQ(p.links.size(), 1u);
}

TEST(InferDevices, OneDeviceNeedsNoLink) {
  const InferDevicesFile f = parse_infer_devices("[device solo]\nspeed = 2\n", "solo.ini");
  ASSERT_EQ(f.devices.size(), 1u);
  EXPECT_EQ(f.first_device, -1);
}

TEST(InferDevices, ReadsTheShippedRecipe) {
  const InferDevicesFile f = read_infer_devices(std::string(FEDSPLIT_SOURCE_DIR) + "/recipes/devices-edge.ini");
  EXPECT_GE(f.devices.size(), 3u);
  EXPECT_GE(f.first_device, 0);
}

void refuses(const std::string& text, const std::vector<std::string>& needles) {
  SCOPED_TRACE(text);
  std::vector<std::string> all = needles;
  all.push_back("e.ini");
  expect_one_line_error<ConfigError>([&] { parse_infer_devices(text, "e.ini"); }, all);
}

const std::string kLink = "[link]\nmbps = 10\nlatency_ms = 1\n";
const std::string kTwo = "[device a]\nspeed = 1\n[device b]\nspeed = 2\n";

TEST(InferDevices, RefusesEveryMistake) {
  refuses("", {"no [device NAME] section"});
  refuses("[device a]\nspeed = 1\nsped = 2\n", {"e.ini:3", "device a.sped", "keys: [device NAME] speed"});
  refuses("[device a]\nspeed = fast\n", {"e.ini:2", "device a.speed", "not a number"});
  refuses("[device a]\nspeed = 0\n", {"device a.speed", "out of range"});
  refuses("[device a]\nspeed = 1\nmemory_mb = -5\n", {"device a.memory_mb", "out of range"});
  refuses("[device a]\nspeed = 1\nmemory_mb = 1.5\n", {"device a.memory_mb", "not an integer"});
  refuses("[device a]\nspeed = 1\nfirst = maybe\n", {"device a.first", "not a boolean"});
  refuses("[device a]\nspeed = 1\nspeed = 2\n", {"device a.speed"});
  refuses("[device a]\nmemory_mb = 5\n", {"e.ini:1: [device a] speed is required"});
  refuses("[device]\nspeed = 1\n", {"e.ini:1: [device] needs a name"});
  refuses("[device a b]\nspeed = 1\n", {"[device a b]: unknown section"});
  refuses("[server]\nspeed = 1\n", {"[server]: unknown section", "[device NAME]"});
  refuses("[device a/b]\nspeed = 1\n", {"'a/b' is not a device name"});
  refuses("speed = 1\n[device a]\nspeed = 1\n", {"speed"});
  refuses(kTwo + "[device a]\nspeed = 3\n" + kLink, {"e.ini:5: [device a] is given twice (also at line 1)"});
  refuses(kTwo, {"no [link]"});
  refuses(kTwo + "[link]\nmbps = 10\n", {"e.ini:5: [link] latency_ms is missing"});
  refuses(kTwo + "[link]\nmbps = -1\nlatency_ms = 1\n", {"link.mbps", "out of range"});
  refuses(kTwo + "[link]\nmbps = 1\nlatency_ms = 1\nbandwidth = 3\n", {"e.ini:8", "link.bandwidth"});
  refuses(kTwo + kLink + "[link a c]\nmbps = 5\n", {"[link a c]: no [device c] in this file"});
  refuses(kTwo + kLink + "[link a a]\nmbps = 5\n", {"[link a a]: a link joins two different devices"});
  refuses(kTwo + kLink + "[link a b]\nmbps = 5\n[link b a]\nmbps = 6\n", {"[link b a] is given twice (also at line 8)"});
  refuses(kTwo + kLink + "[link a b]\n", {"[link a b] sets nothing"});
  refuses(kTwo + kLink + "[link a b]\nlatency = 5\n", {"link a b.latency", "latency_ms"});
  refuses("[device a]\nspeed = 1\nfirst = true\n[device b]\nspeed = 1\nfirst = true\n" + kLink,
          {"e.ini:4: [device b] first = true, and [device a] says so too"});
  std::string many;
  for (int i = 0; i < 17; ++i) many += "[device d" + std::to_string(i) + "]\nspeed = 1\n";
  refuses(many + kLink, {"17 devices; at most 16"});
}

TEST(InferDevices, MissingFileIsAnIoError) {
  EXPECT_THROW(read_infer_devices("/nonexistent/devices.ini"), IoError);
}

}  // namespace
}  // namespace fedsplit
