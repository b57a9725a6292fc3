package hostuser

// SetAfterUseradd sets the hook that runs between useradd and usermod.
func SetAfterUseradd(f func()) { afterUseradd = f }
