// labels: unit
// Client partitions: every document goes to exactly one client; iid is balanced, natural follows
// the key, Dirichlet's skew follows alpha; the summary's label skew against hand-computed values.
#include <gtest/gtest.h>

#include <set>

#include "core/data/partition.h"
#include "core/util/error.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

// 4 labels x 50 documents, interleaved.
std::vector<std::string> four_labels() {
  std::vector<std::string> labels;
  for (int i = 0; i < 200; ++i) labels.push_back(std::string(1, static_cast<char>('a' + i % 4)));
  return labels;
}

void expect_each_document_once(const Partition& p, size_t n) {
  std::multiset<int64_t> seen;
  for (const auto& docs : p.documents) seen.insert(docs.begin(), docs.end());
  ASSERT_EQ(seen.size(), n);
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(seen.count(static_cast<int64_t>(i)), 1u) << "document " << i;
}

}  // namespace

TEST(Partition, IidIsBalancedSeededAndComplete) {
  const auto labels = four_labels();
  PartitionOptions o;
  o.clients = 7;
  o.seed = 5;
  const auto p = partition_documents(labels, o, "label");
  ASSERT_EQ(p.documents.size(), 7u);
  expect_each_document_once(p, labels.size());
  for (const auto& d : p.documents) EXPECT_TRUE(d.size() == 28 || d.size() == 29) << d.size();  // 200 dealt in turn: 4 x 29 + 3 x 28
  EXPECT_EQ(partition_documents(labels, o, "label").documents, p.documents);
  o.seed = 6;
  EXPECT_NE(partition_documents(labels, o, "label").documents, p.documents);
  EXPECT_EQ(p.client_names[3], "client-3");
}

TEST(Partition, NaturalIsOneClientPerValueInOrderOfAppearance) {
  const std::vector<std::string> labels{"Lincoln", "Grant", "Lincoln", "Hayes", "Grant"};
  PartitionOptions o;
  o.scheme = "natural";
  const auto p = partition_documents(labels, o, "president");
  EXPECT_EQ(p.client_names, (std::vector<std::string>{"Lincoln", "Grant", "Hayes"}));
  EXPECT_EQ(p.documents, (std::vector<std::vector<int64_t>>{{0, 2}, {1, 4}, {3}}));
  // Disjoint labels: each client's distribution is one point mass. TV to the overall (2/5, 2/5, 1/5)
  // is 3/5 for Lincoln and Grant, 4/5 for Hayes: mean 2/3.
  const auto s = summarize_partition(p, labels);
  EXPECT_NEAR(s["label_skew_tv"].get<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(s["documents_per_client"]["max"], 2);
  EXPECT_EQ(s["per_client"][2]["labels"]["Hayes"], 1);
}

TEST(Partition, NaturalLeavesOutValuesWithTooFewDocuments) {
  const std::vector<std::string> labels{"Lincoln", "Grant", "Lincoln", "Hayes", "Grant"};
  PartitionOptions o;
  o.scheme = "natural";
  o.min_documents = 2;
  const auto p = partition_documents(labels, o, "president");
  EXPECT_EQ(p.client_names, (std::vector<std::string>{"Lincoln", "Grant"}));
  EXPECT_EQ(p.documents, (std::vector<std::vector<int64_t>>{{0, 2}, {1, 4}}));
  o.min_documents = 3;
  expect_error<DataError>([&] { partition_documents(labels, o, "president"); }, {"no value has federated.min_documents = 3"});
}

TEST(Partition, DirichletSkewFollowsAlpha) {
  const auto labels = four_labels();
  PartitionOptions o;
  o.scheme = "dirichlet";
  o.clients = 5;
  o.seed = 11;
  o.alpha = 1000;  // nearly uniform proportions: every client sees every label about equally
  const auto flat = partition_documents(labels, o, "label");
  expect_each_document_once(flat, labels.size());
  const double flat_tv = summarize_partition(flat, labels)["label_skew_tv"];
  o.alpha = 0.1;  // most of each label on one or two clients
  o.min_documents = 2;
  const auto skewed = partition_documents(labels, o, "label");
  expect_each_document_once(skewed, labels.size());
  const double skewed_tv = summarize_partition(skewed, labels)["label_skew_tv"];
  EXPECT_LT(flat_tv, 0.1);
  EXPECT_GT(skewed_tv, 0.4);
  for (const auto& d : skewed.documents) EXPECT_GE(d.size(), 2u);
  EXPECT_EQ(partition_documents(labels, o, "label").documents, skewed.documents) << "seeded";
}

TEST(Partition, IidSummaryOfAnEvenSplitHasNoSkew) {
  const std::vector<std::string> labels{"a", "b", "a", "b"};
  Partition p{{"x", "y"}, {{0, 1}, {2, 3}}};
  EXPECT_DOUBLE_EQ(summarize_partition(p, labels)["label_skew_tv"].get<double>(), 0.0);
}

TEST(Partition, ErrorsNameTheOptionOrTheDocument) {
  const auto labels = four_labels();
  PartitionOptions o;
  o.clients = 0;
  expect_error<ConfigError>([&] { partition_documents(labels, o, "label"); }, {"federated.clients"});
  o.clients = 500;
  expect_error<DataError>([&] { partition_documents(labels, o, "label"); }, {"only 200 documents"});
  o.clients = 4;
  o.scheme = "shards";
  expect_error<ConfigError>([&] { partition_documents(labels, o, "label"); }, {"iid, natural, dirichlet"});
  o.scheme = "dirichlet";
  o.alpha = 0;
  expect_error<ConfigError>([&] { partition_documents(labels, o, "label"); }, {"federated.alpha"});
  o.alpha = 0.01;
  o.clients = 40;
  o.min_documents = 5;
  expect_error<DataError>([&] { partition_documents(labels, o, "label"); }, {"min_documents"});
  o.scheme = "natural";
  expect_error<DataError>([&] { partition_documents({"a", "", "b"}, o, "genre"); }, {"document 1"});
}
