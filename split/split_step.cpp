#include "split/split_step.h"

#include <sstream>

#include "core/util/error.h"
#include "split/channel.h"
#include "train/trainer.h"

namespace fedsplit {
namespace {

std::string shape_of(const torch::Tensor& t) {
  std::ostringstream ss;
  ss << t.sizes();
  return ss.str();
}

// Counts each message of one step by direction.
class Tally {
 public:
  Tally(Channel& channel, bool device_side, SplitStepReport& report)
      : channel_(channel), device_side_(device_side), report_(report) {}

  void send(const std::string& bytes) {
    channel_.send(bytes);
    count(bytes, /*up=*/device_side_);
  }
  std::string receive() {
    std::string bytes = channel_.receive();
    count(bytes, /*up=*/!device_side_);
    return bytes;
  }
  // A tensor message, on `like`'s device, that must have `like`'s shape.
  torch::Tensor receive_like(const torch::Tensor& like, const char* what) {
    const std::string name = std::string(what) + " from " + channel_.peer_name();
    auto t = decode_tensor(receive(), name);
    if (t.sizes() != like.sizes())
      throw FormatError("split message (" + name + "): shape " + shape_of(t) + " where " + shape_of(like) +
                        " was expected; both parties must run the same model, cut and batch");
    return t.to(like.device(), like.scalar_type());
  }

 private:
  void count(const std::string& bytes, bool up) {
    (up ? report_.bytes_up : report_.bytes_down) += static_cast<int64_t>(bytes.size());
    ++(up ? report_.messages_up : report_.messages_down);
  }
  Channel& channel_;
  bool device_side_;
  SplitStepReport& report_;
};

torch::Device model_device(const CutModel& cut) { return cut.model()->token_embedding().device(); }

// A decoded activation as a leaf on the server's device whose gradient the server sends back.
torch::Tensor leaf_on(const torch::Tensor& decoded, torch::Device device) {
  return decoded.to(device).detach().requires_grad_(true);
}

}  // namespace

SplitDevice::SplitDevice(Decoder model, const SplitOptions& options)
    : cut_(std::move(model), options.cut),
      options_(options),
      noise_(options.noise),
      optimizer_(cut_.parameters(SplitSide::device), options.adamw) {}

SplitStepReport SplitDevice::step(Channel& server, const torch::Tensor& input_ids, const torch::Tensor& targets,
                                  double lr) {
  TORCH_CHECK(input_ids.sizes() == targets.sizes(), "split step: input ids ", input_ids.sizes(), " and targets ",
              targets.sizes(), " must have one shape");
  SplitStepReport report;
  Tally wire(server, /*device_side=*/true, report);
  const auto device = model_device(cut_);
  cut_.model()->train();
  optimizer_.zero_grad();

  const auto activation = cut_.device_front(input_ids.to(device));
  wire.send(encode_tensor(noise_.apply(activation), options_.activation_codec));
  if (!options_.cut.u_shaped()) {
    wire.send(encode_token_ids(targets));
  } else {
    // The tail: hidden states from the server, as a leaf whose gradient goes back up.
    auto hidden = wire.receive_like(activation, "hidden states at split.tail_cut").detach().requires_grad_(true);
    const auto loss = next_token_loss(cut_.device_tail(hidden), targets.to(device));
    loss.backward();
    report.loss = loss.item<double>();
    wire.send(encode_tensor(hidden.grad(), options_.gradient_codec));
  }
  const auto gradient = wire.receive_like(activation, "gradient at split.cut");
  activation.backward(gradient);
  optimizer_.step(lr);
  return report;
}

SplitServer::SplitServer(Decoder model, const SplitOptions& options)
    : cut_(std::move(model), options.cut),
      options_(options),
      optimizer_(cut_.parameters(SplitSide::server), options.adamw) {}

SplitStepReport SplitServer::step(Channel& device_channel, double lr) {
  SplitStepReport report;
  Tally wire(device_channel, /*device_side=*/false, report);
  const auto device = model_device(cut_);
  const std::string from = " from " + device_channel.peer_name();
  cut_.model()->train();
  optimizer_.zero_grad();

  const auto activation = leaf_on(decode_tensor(wire.receive(), "activation at split.cut" + from), device);
  if (activation.dim() != 3 || activation.size(2) != cut_.model()->options.hidden_size)
    throw FormatError("split message (activation at split.cut" + from + "): shape " + shape_of(activation) +
                      " is not [batch, time, " + std::to_string(cut_.model()->options.hidden_size) +
                      "]; both parties must run the same model");
  if (!options_.cut.u_shaped()) {
    const auto targets = decode_token_ids(wire.receive(), "targets" + from).to(device);
    if (targets.sizes() != activation.sizes().slice(0, 2))
      throw FormatError("split message (targets" + from + "): shape " + shape_of(targets) +
                        " does not match the activation " + shape_of(activation));
    const auto loss = next_token_loss(cut_.server_forward(activation), targets);
    loss.backward();
    report.loss = loss.item<double>();
  } else {
    const auto hidden = cut_.server_forward(activation);
    wire.send(encode_tensor(hidden, options_.activation_codec));
    hidden.backward(wire.receive_like(hidden, "gradient at split.tail_cut"));
  }
  wire.send(encode_tensor(activation.grad(), options_.gradient_codec));
  optimizer_.step(lr);
  return report;
}

}  // namespace fedsplit
