package store

// PostureStore keeps the latest posture report of each device (issue 5).
// Part of [Store].
type PostureStore interface{}
