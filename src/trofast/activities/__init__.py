"""Activities: purchases, returns and custom events sent by tills, shops and partners."""
