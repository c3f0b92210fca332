package containerd

// Field numbers (and enum values) of the protobuf messages this package
// encodes and decodes, grouped per message, each group citing the .proto
// file it comes from: containerd's API module
// (github.com/containerd/containerd/api, checked against v1.11 and v1.12;
// the integration tests speak them to containerd 1.6) or protobuf's
// well-known types. Requests name the fields sent, responses those read.

// Map entries (map<K, V> fields), by the protobuf encoding of maps.
const (
	mapKey   = 1
	mapValue = 2
)

// google/protobuf/timestamp.proto, message Timestamp.
const (
	timestampSeconds = 1 // int64
	timestampNanos   = 2 // int32
)

// google/protobuf/any.proto, message Any.
const (
	anyTypeURL = 1
	anyValue   = 2
)

// google/protobuf/field_mask.proto, message FieldMask.
const fieldMaskPaths = 1 // repeated

// api/types/mount.proto, message Mount.
const (
	mountType    = 1
	mountSource  = 2
	mountTarget  = 3
	mountOptions = 4 // repeated
)

// api/types/descriptor.proto, message Descriptor.
const (
	descriptorMediaType = 1
	descriptorDigest    = 2
	descriptorSize      = 3 // int64
)

// api/types/task/task.proto, message Process and enum Status.
const (
	processContainerID = 1
	processID          = 2
	processPid         = 3  // uint32
	processStatus      = 4  // enum Status
	processExitStatus  = 9  // uint32
	processExitedAt    = 10 // Timestamp

	statusCreated = 1
	statusRunning = 2
	statusStopped = 3
	statusPaused  = 4
	statusPausing = 5
)

// api/services/tasks/v1/tasks.proto.
const (
	// CreateTaskRequest
	createTaskContainerID = 1
	createTaskRootfs      = 3 // repeated Mount
	createTaskStdin       = 4
	createTaskStdout      = 5
	createTaskStderr      = 6
	createTaskTerminal    = 7

	// StartRequest, DeleteProcessRequest, GetRequest and KillRequest
	// share their first two fields; DeleteTaskRequest has the first.
	taskContainerID = 1
	taskExecID      = 2
	killSignal      = 3 // uint32
	killAll         = 4 // bool

	// ExecProcessRequest
	execContainerID = 1
	execStdin       = 2
	execStdout      = 3
	execStderr      = 4
	execTerminal    = 5 // bool
	execSpec        = 6 // Any
	execExecID      = 7

	// ResizePtyRequest and CloseIORequest share the first two fields of
	// StartRequest (taskContainerID, taskExecID).
	resizeWidth  = 3 // uint32
	resizeHeight = 4 // uint32
	closeIOStdin = 3 // bool

	// WaitResponse
	waitExitStatus = 1 // uint32

	// GetResponse
	getTaskProcess = 1 // Process
	// ListTasksResponse
	listTasksTasks = 1 // repeated Process
)

// api/services/containers/v1/containers.proto.
const (
	// Container
	containerID          = 1
	containerLabels      = 2 // map<string, string>
	containerImage       = 3
	containerRuntime     = 4 // Container.Runtime
	containerSpec        = 5 // Any
	containerSnapshotter = 6
	containerSnapshotKey = 7
	containerCreatedAt   = 8 // Timestamp
	// Container.Runtime
	containerRuntimeName = 1

	// GetContainerRequest, DeleteContainerRequest
	containerRequestID = 1
	// ListContainersRequest
	listContainersFilters = 1 // repeated
	// GetContainerResponse, CreateContainerRequest, UpdateContainerRequest
	containerField = 1 // Container
	// UpdateContainerRequest
	updateContainerMask = 2 // FieldMask
	// ListContainersResponse
	listContainersContainers = 1 // repeated Container
)

// api/services/images/v1/images.proto.
const (
	// Image
	imageName   = 1
	imageTarget = 3 // Descriptor

	// GetImageRequest
	getImageName = 1
	// GetImageResponse, CreateImageRequest, UpdateImageRequest
	imageField = 1 // Image
)

// api/services/content/v1/content.proto.
const (
	// InfoRequest, ReadContentRequest
	contentDigest = 1
	// ReadContentResponse
	readContentOffset = 1 // int64
	readContentData   = 2

	// WriteContentRequest and its enum WriteAction
	writeContentAction   = 1
	writeContentRef      = 2
	writeContentTotal    = 3 // int64
	writeContentExpected = 4
	writeContentOffset   = 5 // int64
	writeContentData     = 6
	writeContentLabels   = 7 // map<string, string>
	writeActionWrite     = 1
	writeActionCommit    = 2

	// AbortRequest
	abortRef = 1
)

// api/services/snapshots/v1/snapshots.proto.
const (
	// PrepareSnapshotRequest, MountsRequest, RemoveSnapshotRequest,
	// StatSnapshotRequest
	snapshotSnapshotter = 1
	snapshotKey         = 2
	prepareParent       = 3

	// CommitSnapshotRequest
	commitSnapshotter = 1
	commitName        = 2
	commitKey         = 3

	// PrepareSnapshotResponse, MountsResponse
	snapshotMounts = 1 // repeated Mount
)

// api/services/diff/v1/diff.proto, message ApplyRequest.
const (
	applyDiff   = 1 // Descriptor
	applyMounts = 2 // repeated Mount
)

// api/services/leases/v1/leases.proto.
const (
	// CreateRequest, DeleteRequest
	leaseID = 1
	// CreateRequest
	leaseLabels = 3 // map<string, string>
)

// api/services/namespaces/v1/namespace.proto.
const (
	// CreateNamespaceRequest
	createNamespaceNamespace = 1 // Namespace
	// Namespace
	namespaceName = 1
)

// api/services/version/v1/version.proto, message VersionResponse.
const versionVersion = 1
